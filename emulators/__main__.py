from emulators.server import main

main()
