from ._entry import main

__all__: list[str] = []

main()
