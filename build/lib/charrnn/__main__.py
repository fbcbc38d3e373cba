"""`python -m charrnn` runs the same CLI as `charrnn` (and works under torchrun)."""

from charrnn.cli import main

main()
