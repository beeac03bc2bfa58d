#!/bin/sh
# The harness's hands inside a guest (copied to the guest's share as
# guest.sh; guest-init.sh runs it). The host drops cmd/N.sh into the
# share; each runs in the background with its output in cmd/N.out and its
# exit code in cmd/N.rc (written last, by rename). /vpblu/stop ends it.
mkdir -p /vpblu/cmd
touch /vpblu/ready
echo "vpblu-agent: ready after $(cut -d' ' -f1 /proc/uptime) s" >/dev/console
while [ ! -e /vpblu/stop ]; do
  for f in /vpblu/cmd/*.sh; do
    [ -e "$f" ] || continue
    id=${f%.sh}
    mv "$f" "$id.run" || continue
    ( sh "$id.run" >"$id.out" 2>&1; echo $? >"$id.rc.tmp"; mv "$id.rc.tmp" "$id.rc" ) &
  done
  sleep 0.1
done
