"""Tests of charrnn.inspection."""
