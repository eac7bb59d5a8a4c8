from crdt_merge_driver.cli import main

raise SystemExit(main())
