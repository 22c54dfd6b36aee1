from lexrag.cli import main

main()
