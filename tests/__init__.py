"""The test suite: it mirrors the charrnn package tree, plus end-to-end CLI tests at the top."""
