from phone_sim.cli import main

raise SystemExit(main())
