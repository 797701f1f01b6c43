# bash completion for procreg: commands, their options, and the namespaces
# and names of the registry the command line names (--backend/-b, else
# $PROCREG_BACKEND, else the host's shared registry).  Installed as
# share/bash-completion/completions/procreg.

_procreg_registry() {
    # The -b/--backend given so far on the line, as arguments for procreg.
    local i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${COMP_WORDS[i]}" in
        -b|--backend) printf '%s\n' -b "${COMP_WORDS[i+1]}"; return ;;
        --backend=*) printf '%s\n' -b "${COMP_WORDS[i]#--backend=}"; return ;;
        esac
    done
}

_procreg() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local commands="register lookup unregister update list find watch wait
        namespaces drop-namespace stats health metrics backends join leave
        members groups lock select meta"
    local -a reg
    mapfile -t reg < <(_procreg_registry)

    case "$prev" in
    -b|--backend)
        COMPREPLY=($(compgen -W "$(procreg backends 2>/dev/null)" -- "$cur"))
        return ;;
    --pid)
        COMPREPLY=($(compgen -W "$(ps -e -o pid= 2>/dev/null)" -- "$cur"))
        return ;;
    --meta|--meta-string|--timeout|--listen|--member|--from) return ;;
    esac

    # The command and its positional arguments so far.
    local i cmd= npos=0
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${COMP_WORDS[i]}" in
        -b|--backend|--meta|--meta-string|--pid|--ns|--timeout|--listen|\
        --member|--from) ((i++)) ;;
        -*) ;;
        *) if [ -z "$cmd" ]; then cmd=${COMP_WORDS[i]}; else ((npos++)); fi ;;
        esac
    done

    if [[ "$cur" == -* ]]; then
        local opts="--backend --json --help"
        case "$cmd" in
        register) opts+=" --pid --hold --meta --meta-string" ;;
        update) opts+=" --meta --meta-string --replace --force" ;;
        unregister) opts+=" --force" ;;
        find) opts+=" --ns" ;;
        select) opts+=" --ns --count" ;;
        meta) opts+=" --meta --meta-string --delete" ;;
        wait|lock) opts+=" --timeout" ;;
        watch) opts+=" --from" ;;
        stats) opts+=" --prometheus" ;;
        metrics) opts+=" --listen" ;;
        join) opts+=" --pid --hold --meta --meta-string" ;;
        leave) opts+=" --member --pid --force" ;;
        esac
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        return
    fi
    if [ -z "$cmd" ]; then
        COMPREPLY=($(compgen -W "$commands" -- "$cur"))
        return
    fi
    case "$cmd:$npos" in
    register:0|lookup:0|unregister:0|update:0|list:0|watch:0|wait:0|\
    drop-namespace:0|lock:0|meta:0)
        local names
        names=$(procreg "${reg[@]}" namespaces 2>/dev/null |
                while read -r ns _; do printf '%s\n' "$ns"; done)
        COMPREPLY=($(compgen -W "$names" -- "$cur")) ;;
    lookup:1|unregister:1|update:1|watch:1|wait:1)
        local ns
        for ((i = 1; i < COMP_CWORD; i++)); do
            [ "${COMP_WORDS[i]}" = "$cmd" ] && ns=${COMP_WORDS[i+1]} && break
        done
        local names
        names=$(procreg "${reg[@]}" list "$ns" 2>/dev/null |
                while read -r _ name _; do printf '%s\n' "$name"; done |
                tail -n +2)
        COMPREPLY=($(compgen -W "$names" -- "$cur")) ;;
    esac
}
complete -F _procreg procreg
