"""Inspection: what the cells do. Activations of every cell, probes that label the text, the ranking of cells
against a random-init control, and the offline page of `charrnn visualize`."""
