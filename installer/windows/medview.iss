; Inno Setup 6 script for MedView's offline Windows installer. Built by build_windows.ps1, which passes
;   /DAppVersion=<version from pyproject.toml>  /DStageDir=<folder holding app\ and redist\>  /O<output folder>
; app\ is complete (embeddable Python with every locked package installed, resources, launchers): setup copies it,
; installs the Visual C++ runtime when it is missing, and adds Start menu entries. Nothing is downloaded.

#ifndef AppVersion
  #define AppVersion "0.0.0"
#endif
#ifndef StageDir
  #error Pass /DStageDir=<folder> (build_windows.ps1 does)
#endif

[Setup]
AppId={{6F1B2C4E-8D3A-4E57-9C1B-2A7E5D9F0C41}
AppName=MedView
AppVersion={#AppVersion}
AppPublisher=MedView
DefaultDirName={autopf}\MedView
DefaultGroupName=MedView
DisableProgramGroupPage=yes
; the Visual C++ runtime installs machine-wide: setup runs as administrator
PrivilegesRequired=admin
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
MinVersion=10.0
OutputBaseFilename=medview-{#AppVersion}-win64-setup
Compression=lzma2
SolidCompression=yes
LZMANumBlockThreads=4
WizardStyle=modern
UninstallDisplayName=MedView {#AppVersion}
UninstallDisplayIcon={app}\python\pythonw.exe

[Tasks]
Name: desktopicon; Description: "Create a desktop shortcut"; Flags: unchecked

[Files]
Source: "{#StageDir}\app\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs
Source: "{#StageDir}\redist\vc_redist.x64.exe"; DestDir: "{tmp}"; Flags: deleteafterinstall

[Icons]
Name: "{group}\MedView"; Filename: "{app}\python\pythonw.exe"; Parameters: """{app}\medview.pyw"""; WorkingDir: "{app}"
Name: "{group}\MedView self-test"; Filename: "{app}\medview-selftest.cmd"; WorkingDir: "{app}"
Name: "{autodesktop}\MedView"; Filename: "{app}\python\pythonw.exe"; Parameters: """{app}\medview.pyw"""; WorkingDir: "{app}"; Tasks: desktopicon

[Run]
Filename: "{tmp}\vc_redist.x64.exe"; Parameters: "/install /quiet /norestart"; StatusMsg: "Installing the Microsoft Visual C++ runtime..."; Check: VCRuntimeMissing; Flags: waituntilterminated
Filename: "{app}\python\pythonw.exe"; Parameters: """{app}\medview.pyw"""; WorkingDir: "{app}"; Description: "Start MedView"; Flags: postinstall nowait skipifsilent unchecked

[UninstallDelete]
; byte-code caches written after setup (a run as administrator): the whole program folder goes.
; User settings, data, models and the audit log in %LOCALAPPDATA%\MedView stay.
Type: filesandordirs; Name: "{app}"

[Code]
function VCRuntimeMissing(): Boolean;
var
  Installed: Cardinal;
begin
  { the Visual C++ 2015-2022 x64 runtime registers itself here }
  Result := not (RegQueryDWordValue(HKLM64, 'SOFTWARE\Microsoft\VisualStudio\14.0\VC\Runtimes\x64', 'Installed', Installed)
                 and (Installed = 1));
end;
