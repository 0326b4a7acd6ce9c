from purellm.cli import main

raise SystemExit(main())
