"""``python -m cresshift``: the command line (also what ``torchrun -m cresshift bench`` runs)."""
from .cli import main

if __name__ == "__main__":
    main(prog_name="cresshift")
