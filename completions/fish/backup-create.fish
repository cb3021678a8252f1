complete -c backup-create -l exclude -d 'Also exclude paths matching this gitignore-style pattern (repeatable)' -r
complete -c backup-create -l label -d 'Label (default `backup`)' -r
complete -c backup-create -l tag -d 'Tag (repeatable)' -r
complete -c backup-create -l sync-external -d 'Copy what the external targets (or the one named) lack; no backup is taken' -r
complete -c backup-create -l schedule -d 'Install (daily, hourly) or remove (off) a systemd user timer / launchd agent that runs a checkpoint, the retention policy and the health check; no backup is taken' -r -f -a "daily\t'Once a day'
hourly\t'Once an hour'
off\t'Remove the schedule'"
complete -c backup-create -l repo -d 'Repository root [env: BACKUP_REPO] [default: ~/.dotfiles-backups]' -r -F
complete -c backup-create -l config -d 'Config file [env: BACKUP_CONFIG] [default: ~/.config/dotfiles-backup/config.toml]' -r -F
complete -c backup-create -l path -d 'Track this path instead of the configured set (repeatable)' -r -F
complete -c backup-create -l color -d 'Colour in human output: auto (a terminal and no NO_COLOR), always, never' -r -f -a "auto\t'On a terminal, unless `NO_COLOR` is set (non-empty) or `TERM=dumb`'
always\t'Always (an explicit flag outranks `NO_COLOR`, as no-color.org asks)'
never\t'Never'"
complete -c backup-create -l wait -d 'Seconds a writer waits for the repository lock [env: BACKUP_LOCK_WAIT] [default: 5]' -r
complete -c backup-create -l retries -d 'Attempts for transient failures (unreachable external target, busy resource) [env: BACKUP_RETRIES] [default: 3]' -r
complete -c backup-create -l verify-after-write -d 'Read back the packs a checkpoint wrote and check their hashes before committing it (true/false) [env: BACKUP_VERIFY_AFTER_WRITE] [config: repository.verify_after_write]' -r -f -a "true\t''
false\t''"
complete -c backup-create -l config-only -d 'Only the configuration class (`track.config`), not `track.data`'
complete -c backup-create -l dry-run -d 'Show what would be stored; write nothing'
complete -c backup-create -l sizes -d 'Report per-root sizes, large files and exclusions'
complete -c backup-create -l init-secrets -d 'Create an age identity (if there is none) and add its public key to the recipients file, so secret-class files are stored encrypted; no backup is taken'
complete -c backup-create -l print-config -d 'Print the effective configuration, each value with its source (default, config file, env, flag); no backup is taken'
complete -c backup-create -l json -d 'Print exactly one JSON document (the envelope) on stdout'
complete -c backup-create -s q -l quiet -d 'No human summary on stdout (errors still go to stderr)'
complete -c backup-create -s v -l verbose -d 'More detail on stderr'
complete -c backup-create -l allow-foreign-repo -d 'Use a repository owned by another user (owners, setuid and setgid bits in it are not restored) [env: BACKUP_ALLOW_FOREIGN_REPO]'
complete -c backup-create -s h -l help -d 'Print help (see more with \'--help\')'
complete -c backup-create -s V -l version -d 'Print version'
