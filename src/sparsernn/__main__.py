from sparsernn.cli import main

main()
