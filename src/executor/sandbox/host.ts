/**
 * What this host lets the executor do, found by trying rather than assumed:
 * bubblewrap making every namespace a run gets (else util-linux's unshare), a cgroup
 * for runs, nftables.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { type CgroupHost, detectCgroups } from './cgroup-detect.ts';

export const BWRAP_BIN = '/usr/bin/bwrap';
export const UNSHARE_BIN = '/usr/bin/unshare';
export const NFT_BIN = existsSync('/usr/sbin/nft') ? '/usr/sbin/nft' : '/sbin/nft';

export interface HostFeatures {
  root: boolean;
  /** bubblewrap works here with pid, ipc, uts, mount and net namespaces and capped tmpfs; else why not. */
  bwrap: true | string;
  /** util-linux's unshare makes the same namespaces and private tmpfs (without bubblewrap's whitelisted root); else why not. */
  unshare: true | string;
  cgroup: CgroupHost | string;
  /** nftables works (root, the nft program, a netfilter we may change); else why not. */
  nft: true | string;
}

export function detectHost(uid: number): HostFeatures {
  const root = uid === 0;
  return {
    root,
    bwrap: root ? probeBwrap() : 'the executor is not root',
    unshare: root ? probeUnshare() : 'the executor is not root',
    cgroup: root ? detectCgroups() : 'the executor is not root',
    nft: root ? probeNft() : 'the executor is not root',
  };
}

function probeBwrap(): true | string {
  if (!existsSync(BWRAP_BIN)) return `${BWRAP_BIN} is missing (Debian package bubblewrap)`;
  const probe = spawnSync(
    BWRAP_BIN,
    [
      '--die-with-parent',
      '--unshare-pid',
      '--unshare-ipc',
      '--unshare-uts',
      '--unshare-net',
      '--ro-bind',
      '/usr',
      '/usr',
      '--symlink',
      'usr/bin',
      '/bin',
      '--symlink',
      'usr/lib',
      '/lib',
      '--symlink',
      'usr/lib64',
      '/lib64',
      '--proc',
      '/proc',
      '--size',
      '1048576',
      '--perms',
      '1777',
      '--tmpfs',
      '/tmp',
      '--remount-ro',
      '/',
      '--',
      '/usr/bin/true',
    ],
    { encoding: 'utf8', timeout: 10_000, env: { PATH: '/usr/bin:/bin' } },
  );
  if (probe.status === 0) return true;
  const why = (probe.stderr || probe.error?.message || `exit ${probe.status}`).trim().split('\n')[0];
  return `bubblewrap cannot make namespaces here (${why}); in a container it needs CAP_SYS_ADMIN and no seccomp/AppArmor block on mount/unshare`;
}

function probeUnshare(): true | string {
  if (!existsSync(UNSHARE_BIN)) return `${UNSHARE_BIN} is missing (Debian package util-linux)`;
  const probe = spawnSync(
    UNSHARE_BIN,
    [
      '--pid',
      '--fork',
      '--kill-child',
      '--mount-proc',
      '--ipc',
      '--uts',
      '--net',
      '--mount',
      '--propagation',
      'private',
      '--',
      '/bin/sh',
      '-c',
      'mount -o remount,bind,ro / && mount -t tmpfs -o size=1m,mode=1777 tmpfs /tmp',
    ],
    { encoding: 'utf8', timeout: 10_000, env: { PATH: '/usr/bin:/bin:/usr/sbin:/sbin' } },
  );
  if (probe.status === 0) return true;
  const why = (probe.stderr || probe.error?.message || `exit ${probe.status}`).trim().split('\n')[0];
  return `unshare cannot make namespaces here (${why}); it needs CAP_SYS_ADMIN`;
}

function probeNft(): true | string {
  if (!existsSync(NFT_BIN)) return `${NFT_BIN} is missing (Debian package nftables)`;
  const probe = spawnSync(NFT_BIN, ['list', 'tables'], { encoding: 'utf8', timeout: 10_000 });
  if (probe.status === 0) return true;
  return `nft cannot read the rule set (${(probe.stderr || `exit ${probe.status}`).trim().split('\n')[0]}); it needs CAP_NET_ADMIN`;
}
