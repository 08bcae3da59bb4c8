"""Train DiffEIC ([Li2024] Sec. IV-A): ``python train.py fit --config configs/tiny.yaml [--data.root DIR] [...]``."""
from diffeic.training.cli import main

if __name__ == "__main__":
    main()
