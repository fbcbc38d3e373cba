"""Tests of charrnn.tools."""
