complete -c backup-rollback -l overwrite -d 'Changed paths: skip or rename them; with --phase-only, a bare --overwrite also reverts paths changed again after the phase' -r -f -a "always\t'Replace paths that differ (what a rollback does anyway; with --phase-only: also those changed again since)'
skip\t'Leave each file or symlink that differs, roll back the rest, report each left path (exit 3)'
rename\t'Keep each file or symlink that differs beside it as NAME.dotfiles-backup-<ID>~, then roll back'"
complete -c backup-rollback -l packages -d 'Package plan beside the file plan, when the checkpoint holds package lists' -r -f -a "plan\t'Show what the package managers changed since the checkpoint and the commands reversing it'
apply\t'Also run those commands after the files are rolled back (not with --phase-only)'
off\t'No package plan; the package managers are not asked'"
complete -c backup-rollback -l repo -d 'Repository root [env: BACKUP_REPO] [default: ~/.dotfiles-backups]' -r -F
complete -c backup-rollback -l config -d 'Config file [env: BACKUP_CONFIG] [default: ~/.config/dotfiles-backup/config.toml]' -r -F
complete -c backup-rollback -l path -d 'Track this path instead of the configured set (repeatable)' -r -F
complete -c backup-rollback -l color -d 'Colour in human output: auto (a terminal and no NO_COLOR), always, never' -r -f -a "auto\t'On a terminal, unless `NO_COLOR` is set (non-empty) or `TERM=dumb`'
always\t'Always (an explicit flag outranks `NO_COLOR`, as no-color.org asks)'
never\t'Never'"
complete -c backup-rollback -l wait -d 'Seconds a writer waits for the repository lock [env: BACKUP_LOCK_WAIT] [default: 5]' -r
complete -c backup-rollback -l retries -d 'Attempts for transient failures (unreachable external target, busy resource) [env: BACKUP_RETRIES] [default: 3]' -r
complete -c backup-rollback -l verify-after-write -d 'Read back the packs a checkpoint wrote and check their hashes before committing it (true/false) [env: BACKUP_VERIFY_AFTER_WRITE] [config: repository.verify_after_write]' -r -f -a "true\t''
false\t''"
complete -c backup-rollback -l undo -d 'Go back to the state before the last rollback or restore (before the first of consecutive ones); again: redo'
complete -c backup-rollback -l keep-new -d 'Leave files created since the checkpoint in place'
complete -c backup-rollback -l phase-only -d 'Revert only the paths the phase changed (up to the next checkpoint of its run)'
complete -c backup-rollback -l dry-run -d 'Print the plan; change nothing'
complete -c backup-rollback -l force -d 'With --undo: undo even when a checkpoint or backup was taken after the last rollback'
complete -c backup-rollback -l all-homes -d 'Select among the snapshots of every home sharing the repository, not only $HOME\'s'
complete -c backup-rollback -l json -d 'Print exactly one JSON document (the envelope) on stdout'
complete -c backup-rollback -s q -l quiet -d 'No human summary on stdout (errors still go to stderr)'
complete -c backup-rollback -s v -l verbose -d 'More detail on stderr'
complete -c backup-rollback -l allow-foreign-repo -d 'Use a repository owned by another user (owners, setuid and setgid bits in it are not restored) [env: BACKUP_ALLOW_FOREIGN_REPO]'
complete -c backup-rollback -s h -l help -d 'Print help (see more with \'--help\')'
complete -c backup-rollback -s V -l version -d 'Print version'
