from espblink.cli import main

raise SystemExit(main())
