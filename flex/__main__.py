from flex.cli.main import main

main()
