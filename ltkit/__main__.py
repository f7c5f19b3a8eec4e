from ltkit.cli import main

main()
