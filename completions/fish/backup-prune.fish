complete -c backup-prune -l pin -d 'Pin a snapshot (id, prefix, label): kept forever (repeatable)' -r
complete -c backup-prune -l unpin -d 'Unpin a snapshot (repeatable)' -r
complete -c backup-prune -l forget -d 'Remove this snapshot whatever the policy says (repeatable; pinned ones are refused)' -r
complete -c backup-prune -l external -d 'Apply the policy to the external copies (all, or the one named) instead of the local repository' -r
complete -c backup-prune -l repo -d 'Repository root [env: BACKUP_REPO] [default: ~/.dotfiles-backups]' -r -F
complete -c backup-prune -l config -d 'Config file [env: BACKUP_CONFIG] [default: ~/.config/dotfiles-backup/config.toml]' -r -F
complete -c backup-prune -l path -d 'Track this path instead of the configured set (repeatable)' -r -F
complete -c backup-prune -l color -d 'Colour in human output: auto (a terminal and no NO_COLOR), always, never' -r -f -a "auto\t'On a terminal, unless `NO_COLOR` is set (non-empty) or `TERM=dumb`'
always\t'Always (an explicit flag outranks `NO_COLOR`, as no-color.org asks)'
never\t'Never'"
complete -c backup-prune -l wait -d 'Seconds a writer waits for the repository lock [env: BACKUP_LOCK_WAIT] [default: 5]' -r
complete -c backup-prune -l retries -d 'Attempts for transient failures (unreachable external target, busy resource) [env: BACKUP_RETRIES] [default: 3]' -r
complete -c backup-prune -l verify-after-write -d 'Read back the packs a checkpoint wrote and check their hashes before committing it (true/false) [env: BACKUP_VERIFY_AFTER_WRITE] [config: repository.verify_after_write]' -r -f -a "true\t''
false\t''"
complete -c backup-prune -l dry-run -d 'Show what would be kept and removed; change nothing'
complete -c backup-prune -l json -d 'Print exactly one JSON document (the envelope) on stdout'
complete -c backup-prune -s q -l quiet -d 'No human summary on stdout (errors still go to stderr)'
complete -c backup-prune -s v -l verbose -d 'More detail on stderr'
complete -c backup-prune -l allow-foreign-repo -d 'Use a repository owned by another user (owners, setuid and setgid bits in it are not restored) [env: BACKUP_ALLOW_FOREIGN_REPO]'
complete -c backup-prune -s h -l help -d 'Print help (see more with \'--help\')'
complete -c backup-prune -s V -l version -d 'Print version'
