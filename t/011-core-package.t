# The Debian packages, as a user installs them:
#
#   - "./build.sh deb" builds libnginx-mod-http-chat-{core,user,friend,msg,
#     notify} with dh_nginx, at the version of the file VERSION; lintian
#     reports no error;
#   - dpkg installs them into this machine's nginx next to Debian's
#     libnginx-mod-nchan and libnginx-mod-http-lua (with its ndk, also at
#     priority 10): the .so files in /usr/lib/nginx/modules, load
#     snippets with relative paths, the core enabled before the services
#     (priority 10), the upload directory under /var/lib for www-data;
#     "nginx -t" of /etc/nginx/nginx.conf passes;
#   - an nginx that loads /etc/nginx/modules-enabled/ and serves the example
#     site (examples/nginx-chat.conf, with this stack's addresses) serves
#     chat (/health, register, login, a message reaching the other member's
#     room stream, an image upload into the package's default directory)
#     nchan (a publish reaching a subscriber) and Lua (a content handler
#     and a log phase handler that sees our variables) at once, with nchan
#     enabled after our modules and before them, and no worker exits on a
#     signal;
#   - purging the packages restores the machine.

use strict;
use warnings;

use Test::More;
use Test::Nginx::Chat;
use Test::Nginx::Chat::Process;
use ChatStack;
use Cwd qw(getcwd);
use File::Basename qw(basename);

my $ENABLED = '/etc/nginx/modules-enabled';
my $NCHAN = '/usr/lib/nginx/modules/ngx_nchan_module.so';
my @PKGS = map { "libnginx-mod-http-chat-$_" } qw(core user friend msg notify);

plan skip_all => 'installing packages needs root' unless $> == 0;
plan skip_all => "Debian's libnginx-mod-nchan is not installed"
    unless -f $NCHAN;
plan skip_all => "Debian's libnginx-mod-http-lua is not installed"
    unless -f '/usr/lib/nginx/modules/ngx_http_lua_module.so';
for my $tool (qw(dpkg-buildpackage dh_nginx lintian)) {
    plan skip_all => "$tool is missing (./build.sh deps installs it)"
        unless grep { -x "$_/$tool" } split /:/, $ENV{PATH};
}

my $top = getcwd();
my $work = $ENV{TEST_NGINX_WORK} // "$top/.work";
chomp(my $version = slurp("$top/VERSION"));

my ($nchan_link) = glob("$ENABLED/*-mod-nchan.conf");
my $nchan_name = $nchan_link ? basename($nchan_link) : undef;

sub slurp {
    my ($f) = @_;
    open my $fh, '<', $f or return undef;
    local $/;
    return scalar <$fh>;
}

sub run_cmd {
    my ($cmd) = @_;
    my $out = `$cmd 2>&1`;
    return ($? >> 8, $out);
}

sub purge {
    run_cmd("dpkg --purge @PKGS");
}

# whatever happens, the machine ends as it began
my $restored;
sub restore {
    return if $restored++;
    rename("$ENABLED/05-mod-nchan.conf", $nchan_link)
        if $nchan_link && -l "$ENABLED/05-mod-nchan.conf";
    purge();
}
END { restore() }
$SIG{INT} = $SIG{TERM} = sub { restore(); exit 1 };

# an earlier run that died half-way
purge();


# ---- build and check the packages

my ($rc, $out) = run_cmd("./build.sh deb");
is($rc, 0, './build.sh deb builds the packages')
    or BAIL_OUT("no packages:\n" . substr($out, -2000));

my %deb = map { $_ => "$work/deb/${_}_${version}_amd64.deb" } @PKGS;
ok(-f $deb{$_}, "$_ $version is built") for @PKGS;

($rc, $out) = run_cmd("dpkg-deb -f $deb{$PKGS[0]} Version");
is((split /\n/, $out)[0], $version, 'the package version is VERSION');

($rc, $out) = run_cmd("dpkg-deb -f $deb{$PKGS[1]} Depends");
like($out, qr/libnginx-mod-http-chat-core \(= \Q$version\E\)/,
     'a service package depends on the core of its version');
like($out, qr/nginx-abi-[\d.]+-\d+/, '... and on the nginx ABI');

($rc, $out) = run_cmd("lintian $work/deb/nginx-chat_${version}_amd64.changes");
my @errors = grep { /^E: / } split /\n/, $out;
is(scalar @errors, 0, 'lintian reports no error')
    or diag(join "\n", @errors);
diag(join "\n", grep { /^W: / } split /\n/, $out) if $ENV{TEST_VERBOSE};


# ---- install them next to nchan

($rc, $out) = run_cmd("dpkg -i " . join(' ', map { $deb{$_} } @PKGS));
is($rc, 0, 'dpkg installs the packages') or diag($out);

for my $m (qw(core user friend msg notify)) {
    ok(-f "/usr/lib/nginx/modules/ngx_http_chat_${m}_module.so",
       "ngx_http_chat_${m}_module.so is in /usr/lib/nginx/modules");
    my $prio = $m eq 'core' ? 10 : 50;
    my $link = "$ENABLED/$prio-mod-http-chat-$m.conf";
    ok(-l $link, "$m is enabled at priority $prio");
    is(slurp($link), "load_module modules/ngx_http_chat_${m}_module.so;\n",
       "... with a relative load_module line");
}

ok(-f '/etc/nginx/snippets/chat-errors.conf',
   'the JSON error pages are /etc/nginx/snippets/chat-errors.conf');

# the migration ships with its schema; on the suite's database, which is
# the schema already, it has nothing to do
{
    local %ENV = (%ENV,
        CHAT_MYSQL_HOST => '127.0.0.1',
        CHAT_MYSQL_PORT => $ENV{TEST_NGINX_MYSQL_PORT} // 13306,
        CHAT_MYSQL_USER => 'chat', CHAT_MYSQL_PASSWORD => 'chatpw',
        CHAT_MYSQL_DATABASE => $ENV{TEST_NGINX_MYSQL_DATABASE} // 'chat_test',
        CHAT_MONGO_URI => 'mongodb://127.0.0.1:'
                          . ($ENV{TEST_NGINX_MONGO_PORT} // 27117) . '/',
        CHAT_MONGO_DATABASE => ChatStack::mongo_database());
    ($rc, $out) = run_cmd('/usr/bin/python3 /usr/share/nginx-chat/migrate.py --dry-run');
    is($rc, 0, '/usr/share/nginx-chat/migrate.py runs') or diag($out);
    like($out, qr/^migrate: nothing to do$/m, '... and finds nothing to do')
        or diag($out);
}

my @st = stat('/var/lib/nginx-chat/uploads');
is(scalar(@st) ? scalar getpwuid($st[4]) : '', 'www-data',
   '/var/lib/nginx-chat/uploads belongs to www-data');

($rc, $out) = run_cmd('/usr/sbin/nginx -t -q');
is($rc, 0, 'nginx -t of /etc/nginx/nginx.conf passes') or diag($out);


# ---- the example site on the installed modules

my $example = slurp("$top/examples/nginx-chat.conf");

# the example with this stack's addresses; the upload directory left to
# the package's default
sub site {
    my ($port, $secret_file) = @_;
    my $c = $example;
    my $mongo_port = $ENV{TEST_NGINX_MONGO_PORT} // 27117;
    my $mongo_db = ChatStack::mongo_database();
    my @edits = (
        [qr/^chat_mysql .*$/m,
         "chat_mysql 127.0.0.1:" . ($ENV{TEST_NGINX_MYSQL_PORT} // 13306)
         . " user=chat password=chatpw database="
         . ($ENV{TEST_NGINX_MYSQL_DATABASE} // 'chat_test') . ' pool=8;'],
        [qr/^chat_redis  127\.0\.0\.1:6379;/m,
         "chat_redis 127.0.0.1:" . ($ENV{TEST_NGINX_REDIS_PORT} // 16379)
         . ';'],
        [qr{mongodb://127\.0\.0\.1:27017/}, "mongodb://127.0.0.1:$mongo_port/"],
        [qr/database=chat;/, "database=$mongo_db;"],
        [qr{/etc/nginx/chat-jwt\.secret;}, "$secret_file;"],
        [qr/^chat_user_upload_dir .*\n/m, ''],
        [qr/listen  8080;/, "listen 127.0.0.1:$port;"],
        # the test's nginx has its own prefix: the package's snippet by
        # its installed path
        [qr{include  snippets/chat-errors\.conf;},
         'include /etc/nginx/snippets/chat-errors.conf;'],
    );
    for my $e (@edits) {
        $c =~ s/$e->[0]/$e->[1]/ or die "the example has no $e->[0]\n";
    }
    return $c;
}

my $servroot = "$top/t/servroot_package";

for my $order ('nchan after ours', 'nchan before ours') {
    if ($order eq 'nchan before ours') {
        ok(rename($nchan_link, "$ENABLED/05-mod-nchan.conf"),
           'nchan moved before the core (05-mod-nchan.conf)');
    }

    my $gw = Test::Nginx::Chat::Process::free_port();
    my $secret = "$servroot/jwt.secret";

    local $ENV{TEST_NGINX_LOAD_MODULES} = '';
    local $ENV{TEST_NGINX_WORKER_USER} = 'www-data';

    my $inst = Test::Nginx::Chat::Process->new(
        port             => Test::Nginx::Chat::Process::free_port(),
        servroot         => $servroot,
        workers          => 2,
        master           => 1,
        log_level        => 'info',
        no_root_location => 1,
        main_config      => "include $ENABLED/*.conf;\n",
        # the stack's database password is an example's
        http_config      => "chat_development on;\n" . site($gw, $secret),
        config           => <<'EOF',
        location = / {
            chat_service_name  "User Service";
            chat_info;
        }
        location ~ ^/nchan/(\w+)$ {
            nchan_pubsub;
            nchan_channel_id $1;
        }
        location = /lua {
            content_by_lua_block {
                ngx.header["Content-Type"] = "text/plain"
                ngx.say("lua ", ngx.var.chat_request_id ~= nil)
            }
        }
EOF
    );
    $inst->setup;

    # load_module paths are relative to the prefix: Debian's
    # /usr/share/nginx/modules is a link to /usr/lib/nginx/modules
    unlink "$servroot/modules";
    symlink('/usr/lib/nginx/modules', "$servroot/modules")
        or die "$servroot/modules: $!";

    open my $fh, '>', $secret or die "$secret: $!";
    print $fh $ENV{TEST_NGINX_JWT_SECRET} // 'change-me-nginx-chat-secret';
    close $fh;

    my $loaded = join ' ', map { basename(readlink $_) }
                           sort glob("$ENABLED/*.conf");
    like($loaded, $order eq 'nchan after ours'
                  ? qr/chat-core.*chat-user.*nchan/ : qr/nchan.*chat-core/,
         "$order: load order ($loaded)");

    eval { $inst->launch; 1 } or do {
        fail("$order: nginx starts");
        diag($@);
        next;
    };

    my @users = map { scalar getpwuid((stat "/proc/$_")[4]) }
                $inst->worker_pids;
    is_deeply([sort @users], [map { 'www-data' } @users],
              "$order: workers run as www-data");

    local $ChatStack::Base = "http://127.0.0.1:$gw";

    my ($status) = api(GET => '/health');
    is($status, 200, "$order: /health");

    my ($alice, $bob) = map { register_user() } 1 .. 2;
    my ($ta, $tb) = map { login_user($_) } $alice, $bob;
    ok($ta && $tb, "$order: two users register and log in");

    my ($st, $room) = api(GET => "/api/chat-rooms/check/$bob->{id}", $ta);
    is($st, 200, "$order: a room for the two");
    my $rid = ref $room eq 'HASH' ? $room->{id} // 0 : 0;

    my $stream = eval {
        sse_open("/api/messages/stream/$rid?access_token=$tb", {}, $gw, 5);
    };
    is($stream && $stream->status, 200, "$order: bob's room stream opens")
        or diag($@);

    my $text = unique_name('hello');
    ($st) = api(POST => "/api/messages/$rid", $ta, { content => $text });
    is($st, 201, "$order: alice sends a message");

    my $got;
    if ($stream) {
        while (my $ev = $stream->read_event(3)) {
            last if $got = ($ev->{data} // '') =~ /\Q$text\E/;
        }
        $stream->close;
    }
    ok($got, "$order: ... and it reaches bob's stream");

    my ($ust, $json, $res, $png) = upload_png($ta);
    is($ust, 200, "$order: an image upload") or diag($res->{body});
    my $url = ref $json eq 'HASH' ? $json->{profile_image_url} // '' : '';
    my $file = '/var/lib/nginx-chat/uploads/' . basename($url);
    ok($url && -f $file, "$order: ... stored in /var/lib/nginx-chat/uploads");
    $res = http_request(GET => "http://127.0.0.1:$gw$url");
    ok(($res->{status} // 0) == 200 && $res->{body} eq $png,
       "$order: ... and served");

    # nginx's own 404 and a request line it refuses, as the API's JSON
    $res = http_request(GET => "http://127.0.0.1:$gw/no-such-page");
    is_deeply([$res->{status}, json_decode($res->{body} // '')],
              [404, { detail => 'Not Found' }],
              "$order: nginx's own 404 is the package's JSON page");

    $res = http_request(GET => "http://127.0.0.1:$gw/api/auth/%00");
    is_deeply([$res->{status}, json_decode($res->{body} // '')],
              [400, { detail => 'Bad Request' }],
              "$order: ... and its 400");

    $res = http_request(GET => $inst->url('/'));
    my $info = json_decode($res->{body} // '');
    is(ref $info eq 'HASH' ? $info->{version} : '', $version,
       "$order: GET / tells the version");

    # nchan at the same time; the subscription is set up asynchronously:
    # publish until one message comes through
    my $channel = 'pkg' . int(rand(1e9));
    my $sub = eval { sse_open("/nchan/$channel", {}, $inst->port, 5) };
    my $event;
    if ($sub) {
        for my $try (1 .. 20) {
            http_request(POST => $inst->url("/nchan/$channel"),
                         { 'Content-Type' => 'text/plain' }, "hi $try");
            while (my $ev = $sub->read_event(0.25)) {
                if (($ev->{data} // '') =~ /^hi \d+$/) {
                    $event = $ev;
                    last;
                }
            }
            last if $event;
        }
        $sub->close;
    }
    ok($event, "$order: an nchan publish reaches its subscriber");

    # Lua's content handler in the same server, reading one of our
    # variables
    $res = http_request(GET => $inst->url('/lua'));
    is(($res->{status} // 0) . ' ' . ($res->{body} // ''), "200 lua true\n",
       "$order: a Lua content handler answers, and sees \$chat_request_id");

    $inst->stop;

    my $log = $inst->error_log;
    my @bad = $log =~ /^(.*(?:exited on signal|\[alert\]|\[emerg\]).*)$/mg;
    is(scalar @bad, 0, "$order: no worker died, no alert")
        or diag(join "\n", @bad[0 .. ($#bad < 4 ? $#bad : 4)]);
}


# ---- purge

restore();

for my $m (qw(core user friend msg notify)) {
    ok(!-e "/usr/lib/nginx/modules/ngx_http_chat_${m}_module.so"
       && !glob("$ENABLED/*-mod-http-chat-$m.conf"),
       "purged: the $m module and its link are gone");
}
ok(!-e '/var/lib/nginx-chat', 'purged: /var/lib/nginx-chat is gone');
ok(!-e '/etc/nginx/snippets/chat-errors.conf',
   'purged: the error pages snippet is gone');
ok(!$nchan_link || -l $nchan_link, "nchan's link is as it was");

($rc, $out) = run_cmd('/usr/sbin/nginx -t -q');
is($rc, 0, 'nginx -t of /etc/nginx/nginx.conf still passes') or diag($out);

done_testing();
