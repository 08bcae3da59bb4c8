"""Train the one-step decoder (issue #19): ``python train_onestep.py fit --config configs/tiny_onestep.yaml``."""
from diffeic.training.onestep import main

if __name__ == "__main__":
    main()
