"""``sentiment`` (a generated corpus) and ``sst2`` (SST-2 files): binary sentiment classification."""
