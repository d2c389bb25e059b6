from imlca.cli import main

raise SystemExit(main())
