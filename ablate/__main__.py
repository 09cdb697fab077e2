from ablate.cli import main

raise SystemExit(main())
