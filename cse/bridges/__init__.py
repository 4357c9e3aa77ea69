"""Bridges to other libraries, each optional and imported only by name (``cse.bridges.deepinv``
needs the ``compare`` extra: ``pip install "cse[compare]"``)."""
