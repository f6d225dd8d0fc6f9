# free_subid_start FILE...: the lowest start >= 100000 of 65536 ids overlapping no range in any FILE
# (/etc/subuid and /etc/subgid lines NAME:START:COUNT). Sourced by install.sh; tests call it on their own files.
free_subid_start() {
  cat "$@" 2>/dev/null | awk -F: -v want=65536 '
    $2 ~ /^[0-9]+$/ && $3 ~ /^[0-9]+$/ { s[NR]=$2; e[NR]=$2+$3 }
    END { c=100000; moved=1
          while (moved) { moved=0; for (i in s) if (c < e[i] && c+want > s[i]) { c=e[i]; moved=1 } }
          print c }'
}
