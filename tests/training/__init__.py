"""Tests of charrnn.training."""
