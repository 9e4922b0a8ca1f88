from symprune.run.cli import main

main()
