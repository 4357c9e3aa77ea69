"""Data preparation for cse: ``python -m data_tools ...`` (webdataset shards, subsets, digits)."""
