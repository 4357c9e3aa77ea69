"""The paper's evidence as measurements: the score DPS implies and its error and mean against a
conditional reference (Observations I-II, :mod:`cse.analysis.scores`), and the exact-posterior
benchmark of every sampler on Gaussian mixtures (:mod:`cse.analysis.exact`)."""
