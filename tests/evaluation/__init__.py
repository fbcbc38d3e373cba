"""Tests of charrnn.evaluation."""
