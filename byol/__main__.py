from byol.cli import main

raise SystemExit(main())
