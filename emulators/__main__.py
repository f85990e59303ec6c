from emulators.core.server import main

main()
