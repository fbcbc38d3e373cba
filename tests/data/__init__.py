"""Tests of charrnn.data."""
