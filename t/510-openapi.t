# The API reference (openapi/openapi.json) against the code and the running
# stack: its /api operations are exactly the modules' route tables (those
# of the contract's section 12 may still be missing from the tables), each
# listener serves its part of it as valid OpenAPI 3.1, and real answers of
# the stack validate against the documented schemas
# (t/openapi-responses.mjs).  Needs "./build.sh test" (its stack and the
# tools it installs under .work/docs-tools).

use strict;
use warnings;

use Test::More;
use Test::Nginx::Chat qw(:all);
use ChatStack;
use Cwd qw(getcwd);
use File::Temp qw(tempdir);
use JSON::PP;

my $top = getcwd();
my $work = $ENV{TEST_NGINX_WORK} // "$top/.work";
my $tools = "$work/docs-tools";
my $gw_port = $ENV{TEST_NGINX_STACK_PORT};

plan skip_all => 'needs the stack of "./build.sh test"' unless $gw_port;
plan skip_all => 'needs the tools "./build.sh test" installs in ' . $tools
    unless -d "$tools/node_modules/ajv";

$ENV{CHAT_DOCS_TOOLS} = $tools;

my $gw = "http://127.0.0.1:$gw_port";
my %listener = (user => $ENV{CHAT_USER_PORT}, friend => $ENV{CHAT_FRIEND_PORT},
                msg => $ENV{CHAT_MSG_PORT}, notify => $ENV{CHAT_NOTIFY_PORT});

# operations the contract's section 12 adds; they are being built beside
# the document and are checked like the rest once their routes exist
my %section12 = map { $_ => 1 } qw(F8 F9 C13 N5 12.1);

my $json = JSON::PP->new->canonical;

sub read_file {
    my ($file) = @_;

    local $/;
    open(my $fh, '<', $file) or die "$file: $!\n";
    my $text = <$fh>;
    close $fh;

    return $text;
}

# "METHOD /api/path/{}" of every route of a module's table
sub module_routes {
    my ($module) = @_;
    my %routes;

    for my $file (glob "$top/ngx_chat_${module}_module/*.c") {
        my $src = read_file($file);

        while ($src =~ /\{\s*NGX_HTTP_([A-Z]+),
                        \s*ngx_string\("(\/api[^"]*)"\)/gx)
        {
            my ($method, $pattern) = ($1, $2);
            $pattern =~ s/\{[^}]*\}/{}/g;
            $routes{"$method $pattern"} = 1;
        }
    }

    return \%routes;
}

# "METHOD /api/path/{}" => the operation, of a document's /api paths
sub document_routes {
    my ($doc) = @_;
    my %ops;

    for my $path (keys %{ $doc->{paths} }) {
        next unless $path =~ m{^/api/};

        (my $pattern = $path) =~ s/\{[^}]+\}/{}/g;

        for my $method (keys %{ $doc->{paths}{$path} }) {
            $ops{uc($method) . " $pattern"} = $doc->{paths}{$path}{$method};
        }
    }

    return \%ops;
}

# the routes a document must have (the table) and may have besides (the
# section 12 operations not in the table yet)
sub compare_routes {
    my ($name, $table, $doc) = @_;
    my $ops = document_routes($doc);

    my @missing = sort grep { !$ops->{$_} } keys %$table;
    my @extra = sort grep { !$table->{$_} } keys %$ops;
    my @unknown = grep { !$section12{ $ops->{$_}{'x-contract'} // '' } }
                  @extra;

    is_deeply(\@missing, [], "$name: no route of the tables is missing");
    is_deeply(\@unknown, [], "$name: no route besides the tables'");
    diag("$name: documented, not routed yet (API.md 12): @extra") if @extra;
}

my $source = decode_json(read_file("$top/openapi/openapi.json"));
my $version = read_file("$top/VERSION");
$version =~ s/\s+$//;

my %table = map { $_ => module_routes($_) } keys %listener;
my %all = map { %$_ } values %table;

ok(keys(%all) >= 30, 'route tables read (' . keys(%all) . ' routes)');

compare_routes('openapi/openapi.json', \%all, $source);
is($source->{info}{version}, $version,
   'openapi/openapi.json: the version in VERSION (the packages ship it)');

# every listener serves its part
my $dir = tempdir(CLEANUP => 1);
my @files;

{
    my $res = http_request(GET => "$gw/openapi.json");
    is($res->{status}, 200, 'the gateway serves /openapi.json');
    like($res->{headers}{'content-type'} // '', qr{^application/json},
         '... as JSON');

    my $doc = eval { decode_json($res->{body}) } // {};
    compare_routes('the gateway', \%all, $doc);
    is($doc->{info}{version}, $version, '... of the version in VERSION');
    ok(!$doc->{paths}{'/'}, "... without the service listeners' /");
    ok($doc->{paths}{'/ready'}, '... with its own /ready');

    open(my $fh, '>', "$dir/gateway.json") or die "$!\n";
    print {$fh} $res->{body};
    close $fh;
    push @files, "$dir/gateway.json";

    $res = http_request(GET => "$gw/docs/");
    is($res->{status}, 200, 'Swagger UI at /docs/');
    like($res->{body}, qr{<script src="swagger-ui-bundle\.js">},
         '... its page');

    $res = http_request(GET => "$gw/docs/swagger-ui-bundle.js");
    is($res->{status}, 200, '... its script, from this nginx');
    like($res->{headers}{'content-type'} // '', qr{^application/javascript},
         '... as a script');

    $res = http_request(GET => "$gw/docs");
    is($res->{status}, 301, '/docs sends to /docs/');
}

for my $name (sort keys %listener) {
    my $res = http_request(GET => "http://127.0.0.1:$listener{$name}"
                                  . '/openapi.json');
    is($res->{status}, 200, "the $name listener serves /openapi.json");

    my $doc = eval { decode_json($res->{body}) } // {};
    compare_routes("the $name listener", $table{$name}, $doc);
    ok($doc->{paths}{'/'} && $doc->{paths}{'/health'},
       '... with its / and /health');
    ok(!$doc->{paths}{'/ready'}, "... without the gateway's /ready");

    open(my $fh, '>', "$dir/$name.json") or die "$!\n";
    print {$fh} $res->{body};
    close $fh;
    push @files, "$dir/$name.json";

    $res = http_request(GET => "http://127.0.0.1:$listener{$name}/docs/");
    is($res->{status}, 200, '... and Swagger UI');
}

# OpenAPI 3.1, by the specification's schemas
for my $line (`node t/openapi-validate.mjs @files`) {
    my $r = decode_json($line);
    (my $name = $r->{file}) =~ s{.*/}{};

    ok($r->{valid}, "$name: valid OpenAPI")
        or diag($json->encode($r->{errors}));
    is($r->{version}, '3.1', "... $r->{version}");
}

# real answers against the documents
{
    my $user = "http://127.0.0.1:$listener{user}";
    my ($summary, $checked);

    for my $line (`node t/openapi-responses.mjs $gw $user 2>&1`) {
        my $r = eval { decode_json($line) };

        if (!$r) {
            fail('t/openapi-responses.mjs: ' . $line);
            next;
        }

        if (exists $r->{covered}) {
            $summary = $r;
            next;
        }

        $checked++;
        ok($r->{ok}, $r->{name}) or diag($r->{diag});
    }

    ok($checked > 80, "answers checked: " . ($checked // 0));
    ok($summary, 'the check ran to its end') or $summary = {};

    # every documented operation answered at least once
    my %seen = map { $_ => 1 } @{ $summary->{covered} // [] },
                               @{ $summary->{unserved} // [] };
    my @gw_ops = map { my $p = $_;
                       map { "$gw $source->{paths}{$p}{$_}{operationId}" }
                       grep { !grep { $_ eq 'service' }
                                  @{ $source->{paths}{$p}{$_}{tags} } }
                       keys %{ $source->{paths}{$p} } }
                 keys %{ $source->{paths} };

    is_deeply([sort grep { !$seen{$_} } @gw_ops], [],
              'every operation of the gateway was exercised');
    ok($seen{"$user serviceInfo"} && $seen{"$user getUsersBatch"},
       'the user listener: its own / and the token-less batch');
    diag("not routed yet (API.md 12): @{ $summary->{unserved} }")
        if @{ $summary->{unserved} // [] };
}

done_testing();
