"""Generation: sampling with temperature, top-k and top-p (`sampling.py`), the one-character stepper, beam
search, and the interactive prompt."""
