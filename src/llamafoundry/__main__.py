from llamafoundry.cli import main

raise SystemExit(main())
