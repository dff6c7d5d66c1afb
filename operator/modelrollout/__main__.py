"""`python -m modelrollout` / `modelrollout-operator`: run the operator."""

from __future__ import annotations


def main() -> None:
    # Imported here so that `import modelrollout` never pulls in kopf.
    from modelrollout.handlers import run

    run()


if __name__ == "__main__":
    main()
