"""Data: which files make a corpus, how their bytes become text and the text ids, the cache, the split
and the truncated-BPTT streams."""
