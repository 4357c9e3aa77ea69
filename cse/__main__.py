import cse  # noqa: F401  (makes torchvision importable before lightning loads it)
from cse.cli import main

if __name__ == "__main__":
    main()
