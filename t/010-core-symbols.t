# Our modules next to Debian's nchan (libnginx-mod-nchan), in either load
# order.  nchan's module exports the hiredis it bundles, and nginx loads
# modules with RTLD_GLOBAL: whichever copy enters the global scope first
# would be called by the other module too.  Each module must call its own
# client libraries whatever else nginx has loaded:
#
#   - nginx -t passes;
#   - /health answers, and register, login and GET /api/profile/me (the
#     token's revocation check in Redis) work;
#   - at the same time an nchan pub/sub location with Redis storage works
#     (a publish reaches an nchan subscriber);
#   - no worker exits on a signal.

use strict;
use warnings;

use Test::More;
use Test::Nginx::Chat;
use Test::Nginx::Chat::Process;
use ChatStack;
use Time::HiRes qw(sleep);

my $NCHAN = '/usr/lib/nginx/modules/ngx_nchan_module.so';

plan skip_all => "$NCHAN is absent (Debian's libnginx-mod-nchan)"
    unless -f $NCHAN;
plan skip_all => 'TEST_NGINX_LOAD_MODULES lists no modules'
    unless ($ENV{TEST_NGINX_LOAD_MODULES} // '') =~ /\S/;

my @ours = split ' ', $ENV{TEST_NGINX_LOAD_MODULES};
my $redis_port = $ENV{TEST_NGINX_REDIS_PORT} // 16379;

my %orders = (
    'nchan before ours'               => [$NCHAN, @ours],
    'nchan after ours'                => [@ours, $NCHAN],
    'nchan between core and services' => [$ours[0], $NCHAN, @ours[1 .. $#ours]],
);

my $n = 0;

for my $name ('nchan before ours', 'nchan after ours',
              'nchan between core and services')
{
    $n++;
    my $load = join '', map { "load_module $_;\n" } @{ $orders{$name} };
    my $ns = unique_name('nchan');

    # the load_module lines are all ours: none from the harness
    local $ENV{TEST_NGINX_LOAD_MODULES} = '';

    my $inst = Test::Nginx::Chat::Process->new(
        port        => Test::Nginx::Chat::Process::free_port(),
        servroot    => "t/servroot_symbols_$n",
        workers     => 2,
        master      => 1,
        log_level   => 'info',
        main_config => $load . chat_main_config(),
        http_config => chat_http_config() . <<"EOF",
    upstream chat_nchan_redis {
        nchan_redis_server redis://127.0.0.1:$redis_port;
    }
EOF
        config      => <<'EOF',
        location /api/ { chat_user; }
        location = /health { chat_health; }
        location ~ ^/nchan/(\w+)$ {
            nchan_pubsub;
            nchan_channel_id $1;
            nchan_redis_pass chat_nchan_redis;
        }
EOF
    );
    $inst->setup;

    my @cmd = (Test::Nginx::Chat::Process::nginx_binary(),
               '-p', $inst->servroot . '/', '-c', 'conf/nginx.conf',
               '-e', 'logs/error.log', '-t', '-q');
    my $out = `@cmd 2>&1`;
    is($?, 0, "$name: nginx -t passes") or diag($out);

    eval { $inst->launch; 1 } or do {
        fail("$name: nginx starts");
        diag($@);
        next;
    };
    $ChatStack::Base = $inst->url('');

    my ($status) = api(GET => '/health');
    is($status, 200, "$name: /health answers");

    my $user = eval { register_user() };
    ok($user, "$name: a user registers") or diag($@);
    my $token = $user && eval { login_user($user) };
    ok($token, "$name: ... logs in") or diag($@);

    my $me;
    ($status, $me) = api(GET => '/api/profile/me', $token);
    is($status, 200, "$name: GET /api/profile/me (a Redis check) answers");
    is($me && $me->{id}, $user && $user->{id}, "$name: ... with the caller");

    # nchan at the same time, through its own Redis client
    my $channel = "c$n" . int(rand(1e9));
    my $sub = eval {
        sse_open("/nchan/$channel", {}, $inst->port, 5);
    };
    is($sub && $sub->status, 200, "$name: an nchan subscriber connects")
        or diag($@);

    # the subscription reaches Redis asynchronously: publish until one
    # message comes through
    my ($event, $pub);
    if ($sub) {
        for my $try (1 .. 20) {
            $pub = http_request(POST => $inst->url("/nchan/$channel"),
                                { 'Content-Type' => 'text/plain' },
                                "hello $ns $try");
            last unless ($pub->{status} // 0) =~ /^20[12]$/;
            while (my $ev = $sub->read_event(0.25)) {
                if (($ev->{data} // '') =~ /^hello \Q$ns\E/) {
                    $event = $ev;
                    last;
                }
            }
            last if $event;
        }
        $sub->close;
    }
    like($pub && $pub->{status} // 0, qr/^20[12]$/,
         "$name: an nchan publish is accepted");
    like($event && $event->{data} // '', qr/^hello \Q$ns\E \d+$/,
         "$name: ... and reaches the nchan subscriber");

    # still served after nchan's work
    ($status) = api(GET => '/api/profile/me', $token);
    is($status, 200, "$name: GET /api/profile/me still answers");

    stop_nginx($inst);

    my $log = $inst->error_log;
    my @signals = $log =~ /^(.*exited on signal.*)$/mg;
    is(scalar @signals, 0, "$name: no worker exited on a signal")
        or diag(join "\n", @signals[0 .. ($#signals < 4 ? $#signals : 4)]);
}

done_testing();
