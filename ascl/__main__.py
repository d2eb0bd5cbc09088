from ascl.cli import main

main()
