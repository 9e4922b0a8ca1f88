from symprune.cli import main

main()
