"""What tests share: real daemons (daemons), disks (disks), etcd (etcd), fault-injecting
proxies (proxy), in-process replicas (replica), canonical dumps (dump), and the apps'
files and checks (apps, bank). No test imports another test file."""
