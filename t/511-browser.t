# The browser client (/app/ on the gateway) and Swagger UI (/docs/) in
# headless Chromium (t/browser-e2e.mjs, puppeteer-core): two users in two
# browser contexts register, become friends and chat; A's message is in
# B's window within a second; after nginx reloads under the open streams,
# A's window gets B's next message through its resumed stream.
# Screenshots of both windows and of Swagger UI go to .work/screenshots/.  Needs "./build.sh test" (its stack,
# Debian's chromium and the tools it installs under .work/docs-tools).

use strict;
use warnings;

use Test::More;
use Cwd qw(getcwd);
use JSON::PP;

my $top = getcwd();
my $work = $ENV{TEST_NGINX_WORK} // "$top/.work";
my $chromium = $ENV{CHAT_CHROMIUM} // '/usr/bin/chromium';
my $gw_port = $ENV{TEST_NGINX_STACK_PORT};

plan skip_all => 'needs the stack of "./build.sh test"' unless $gw_port;
plan skip_all => "needs $chromium" unless -x $chromium;
plan skip_all => 'needs puppeteer-core in $work/docs-tools'
    unless -d "$work/docs-tools/node_modules/puppeteer-core";

$ENV{CHAT_DOCS_TOOLS} = "$work/docs-tools";

# the test stack's nginx, reloaded under the streams (resumption)
my $pidfile = "$work/nginx-test/logs/nginx.pid";
if (-f $pidfile && open(my $fh, '<', $pidfile)) {
    chomp($ENV{CHAT_NGINX_PID} = <$fh>);
    close $fh;
}

my $shots = "$work/screenshots";
my $started = time;
my ($latency, $checks);

for my $line (`node t/browser-e2e.mjs http://127.0.0.1:$gw_port $shots 2>&1`)
{
    my $r = eval { decode_json($line) };

    if (!$r) {
        diag($line);
        next;
    }

    if (exists $r->{latency_ms}) {
        $latency = $r->{latency_ms};
        next;
    }

    $checks++;
    ok($r->{ok}, $r->{name}) or diag($r->{diag});
}

ok($checks && $checks >= 10, 'the scenario ran: ' . ($checks // 0)
                             . ' checks');
diag("message latency from A's click to B's window: "
     . ($latency // '-') . ' ms');

ok(-s "$shots/$_", "screenshot $_") for qw(app-a.png app-b.png docs.png);
ok(time - $started < 60, 'done within a minute (' . (time - $started)
                         . ' s)');

done_testing();
