from fastpipes.cli.main import main

raise SystemExit(main())
