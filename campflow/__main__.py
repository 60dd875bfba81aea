from campflow.cli import main

main()
