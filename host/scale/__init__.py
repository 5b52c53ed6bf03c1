"""Scale-out over the API: a pool of workers on one machine and Ray actors that each own one worker."""
