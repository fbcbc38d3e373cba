"""charrnn: character-level LSTM language models, trained with truncated BPTT."""

__version__ = "0.1.0"
