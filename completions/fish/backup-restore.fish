complete -c backup-restore -l target -d 'Restore under this directory instead of the original place (`~/x` → DIR/x, `/etc/x` → DIR/etc/x)' -r -F
complete -c backup-restore -l overwrite -d 'What to do with existing paths that differ' -r -f -a "never\t'Refuse when any existing path differs (exit 5); change nothing'
if-changed\t'Replace paths that differ'
always\t'Rewrite every path, even identical ones'
skip\t'Leave each path that differs, restore the rest, report each left path (exit 3)'
rename\t'Keep each file or symlink that differs beside it as NAME.dotfiles-backup-<ID>~, then restore'"
complete -c backup-restore -l from-external -d 'Fetch the external copy (the only target, or the one named) into the local repository first (a new machine)' -r
complete -c backup-restore -l repo -d 'Repository root [env: BACKUP_REPO] [default: ~/.dotfiles-backups]' -r -F
complete -c backup-restore -l config -d 'Config file [env: BACKUP_CONFIG] [default: ~/.config/dotfiles-backup/config.toml]' -r -F
complete -c backup-restore -l path -d 'Track this path instead of the configured set (repeatable)' -r -F
complete -c backup-restore -l color -d 'Colour in human output: auto (a terminal and no NO_COLOR), always, never' -r -f -a "auto\t'On a terminal, unless `NO_COLOR` is set (non-empty) or `TERM=dumb`'
always\t'Always (an explicit flag outranks `NO_COLOR`, as no-color.org asks)'
never\t'Never'"
complete -c backup-restore -l wait -d 'Seconds a writer waits for the repository lock [env: BACKUP_LOCK_WAIT] [default: 5]' -r
complete -c backup-restore -l retries -d 'Attempts for transient failures (unreachable external target, busy resource) [env: BACKUP_RETRIES] [default: 3]' -r
complete -c backup-restore -l verify-after-write -d 'Read back the packs a checkpoint wrote and check their hashes before committing it (true/false) [env: BACKUP_VERIFY_AFTER_WRITE] [config: repository.verify_after_write]' -r -f -a "true\t''
false\t''"
complete -c backup-restore -l dry-run -d 'Print the plan; change nothing'
complete -c backup-restore -l all-homes -d 'Select among the snapshots of every home sharing the repository, not only $HOME\'s'
complete -c backup-restore -l json -d 'Print exactly one JSON document (the envelope) on stdout'
complete -c backup-restore -s q -l quiet -d 'No human summary on stdout (errors still go to stderr)'
complete -c backup-restore -s v -l verbose -d 'More detail on stderr'
complete -c backup-restore -l allow-foreign-repo -d 'Use a repository owned by another user (owners, setuid and setgid bits in it are not restored) [env: BACKUP_ALLOW_FOREIGN_REPO]'
complete -c backup-restore -s h -l help -d 'Print help (see more with \'--help\')'
complete -c backup-restore -s V -l version -d 'Print version'
