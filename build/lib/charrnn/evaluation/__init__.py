"""Evaluation: a model's loss on a split or a file, with the state carried (static), or learning as it reads
(dynamic)."""
