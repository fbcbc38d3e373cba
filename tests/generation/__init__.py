"""Tests of charrnn.generation."""
