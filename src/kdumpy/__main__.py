from kdumpy.cli import main

raise SystemExit(main())
