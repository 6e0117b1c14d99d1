"""The engine's `do_*` actions, by family (as Zulip's zerver/actions/): each writes a change
and its log rows together, in one transaction."""
